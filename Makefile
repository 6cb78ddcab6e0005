# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch first, so that nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# The job onnxkd exists for, on a shipped example: compress the digits CNN at ratio 0.5 (prune, distill,
# validate with onnxruntime, report), gated on losing at most 1 accuracy point.
demo: $(STAMP)
	mkdir -p demo_out
	$(BIN)/onnxkd compress examples/digits/teacher.onnx --ratio 0.5 --data examples/digits/train.npz \
		--val-data examples/digits/val.npz --max-accuracy-drop 0.01 \
		-o demo_out/digits.student.onnx --report demo_out/digits.report

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) demo_out examples_out
