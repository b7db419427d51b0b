# Every target does its own set-up and can be run again at any time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INSPECTOR := .cache/inspector/node_modules/.bin/mcp-inspector
DASHBOARD := mcp_server/dashboard
UPLOT := $(DASHBOARD)/node_modules/uplot/dist/uPlot.iife.min.js

.PHONY: setup test test-ray lint demo bench clean claude-config

setup: $(STAMP) $(UPLOT)

# torch first, CPU build where we can: the wheel this kind of machine keeps on disk, else the
# PyTorch CPU index, else whatever pip finds. Then the project and its dev tools.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null \
	  || $(PY) -m pip install -q torch==2.13.0 \
	  || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
	  || $(PY) -m pip install -q "torch>=2.2"
	$(PY) -m pip install -q -e ".[dev,ray,browser]"
	touch $(STAMP)

# uPlot, the dashboard's charting library, from npm (package.json + lock beside the pages); the
# server inlines it into its pages. Without npm the dashboard says charts are unavailable.
$(UPLOT): $(DASHBOARD)/package.json $(DASHBOARD)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  (npm ci --prefix $(DASHBOARD) --silent --no-audit --no-fund >/dev/null 2>&1 && touch $(UPLOT)) \
	  || echo "uPlot install failed: the dashboard will show no charts" >&2; \
	else echo "npm not found: the dashboard will show no charts, its browser tests skip" >&2; fi

# The MCP Inspector (an independent client) for the end-to-end smoke test; skipped without npm.
$(INSPECTOR):
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p .cache/inspector && cd .cache/inspector && \
	  (test -f package.json || echo '{"private": true}' > package.json) && \
	  npm install --silent --no-audit --no-fund @modelcontextprotocol/inspector@2.12.0 >/dev/null 2>&1 \
	  || echo "inspector install failed: its test will be skipped" >&2; \
	else echo "npm not found: the Inspector test will be skipped" >&2; fi

# The whole suite: everything but the Ray tests, then those in their loopback-only namespace.
test: $(STAMP) $(UPLOT) $(INSPECTOR)
	$(PY) -m pytest
	PY=$(PY) scripts/ray_tests.sh

# The Ray tests in a loopback-only network namespace (skipped, saying why, where none can be made).
test-ray: $(STAMP)
	PY=$(PY) scripts/ray_tests.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# A real ~10-epoch run on the overfitting set, watched epoch by epoch through an MCP client over
# stdio, then judged by a second client.
demo: $(STAMP)
	$(PY) examples/agents/training_monitor.py --dataset noisy_spirals --epochs 10 --data-dir data/demo
	$(PY) examples/agents/loss_analyzer.py --data-dir data/demo

bench: $(STAMP)
	$(PY) bench/storage_bench.py
	$(PY) bench/analysis_bench.py
	$(PY) bench/trainer_overhead.py
	$(PY) bench/client_overhead.py
	$(PY) bench/mcp_bench.py
	$(PY) bench/rest_bench.py
	$(PY) bench/bridge_bench.py
	$(PY) bench/ray_bench.py

# claude_desktop_config.example.json with this checkout's absolute paths filled in.
claude-config: $(STAMP)
	@sed "s#/ABSOLUTE/PATH/TO/training-mcp#$(CURDIR)#g" claude_desktop_config.example.json

clean:
	rm -rf $(VENV) .cache .mypy_cache .pytest_cache .ruff_cache $(DASHBOARD)/node_modules
