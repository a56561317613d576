# robustft — everyday commands. `make demo` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo compare compare-tuned test test-all lint clean

# torch/torchvision are pinned and installed first: they come from this machine's disk,
# and an unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,real]"
	touch $(STAMP)

install: $(STAMP)

# The whole method on a generated benchmark, offline (docs/demo.md).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(BIN)/robustft-demo $(ARGS)

# Every objective (relevance, second-order relevance, plain, RRR, GradMask) on three draws of
# the demo's images, with the shortcut-free reference; rewrites the compare block of docs/demo.md.
compare: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(BIN)/robustft-compare compare.readme=docs/demo.md $(ARGS)

# The recipe chosen by robustft-tune on each draw's own held-out masks, against the fixed
# demo recipe and plain fine-tuning, on the three generated benchmarks (docs/demo_measurements.md);
# rewrites the compare_tuned block of docs/demo.md.
compare-tuned: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(BIN)/robustft-compare --config-name compare_tuned compare.readme=docs/demo.md $(ARGS)

# The default suite (CI runs exactly this); `make test-all` adds the slow tests.
test: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=disabled $(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check robustft tests

clean:
	rm -rf logs outputs multirun .pytest_cache
