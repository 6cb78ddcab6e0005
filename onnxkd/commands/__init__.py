"""One click command per file; registered by name in onnxkd.cli.COMMANDS."""
