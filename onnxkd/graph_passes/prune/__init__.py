"""From channel groups to a smaller model: importance scores, the plan (kept channels per group), the
rewrite that slices initializers and edits shape constants, and plans composed over several steps."""
