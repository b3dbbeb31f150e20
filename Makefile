# The two set-up commands of README.md.  PY may point at another interpreter (e.g. a venv's python).
PY ?= python3
export HF_HUB_OFFLINE ?= 1

.PHONY: install browser course test check build bench

install:
	$(PY) -m pip install -q -e ".[test]"

# Debian's Chromium for the browser test (Playwright must not download its own browser).
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "note: /usr/bin/chromium missing and not installable here; the browser test will be skipped"

# Build the embedded models if they are not cached, run every lesson headless, refresh figures/, then check that
# every record is what this code makes.  Torch's intra-op thread count is pinned (it changes trained weights);
# every record stores it and `make check` requires it.
course: install
	FMCLS_THREADS=2 $(PY) -m fmcls_lib course --set full
	$(PY) -m fmcls_lib check

# The whole test suite: unit tests, a papermill run, and every lesson under nbval with smoke settings, twice: as
# shipped (exercise stubs: "not attempted") and as the instructor version (the library's solutions filled in).
test: install browser
	rm -rf .smoke && $(PY) -m fmcls_lib prepare --set smoke .smoke/shipped && \
	  $(PY) -m fmcls_lib prepare --set smoke --solutions .smoke/solved
	$(PY) -m pytest tests .smoke --nbval-lax -p no:cacheprovider

# The shipped models against their recipes, and every committed record (figures/*.json) against the current code,
# notebooks and default parameters (fingerprint, params, full splits, 2 threads, a verdict per claim).
check:
	$(PY) -m fmcls_lib check

# Re-train the shipped models from scratch (only when their recipe changed; commit the result).
build:
	$(PY) -m fmcls_lib build

bench:
	$(PY) benchmarks/run_all.py
