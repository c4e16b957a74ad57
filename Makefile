# How each function is built as deployed: a static musl binary, cross-compiled and linked by
# cargo-lambda (zig), with no dynamic loader and no shared libraries to map at cold start,
# which is what brings init to the hello-world baseline (docs/performance.md).
#
# `sam build` (infra/template.yaml, BuildMethod: makefile) runs `make build-<LogicalId>` with
# ARTIFACTS_DIR set; that target leaves the function's `bootstrap` there. `make lambdas` builds
# all seven into LAMBDA_DIR/<function>/bootstrap (scripts/test and scripts/bench, for x86_64).
#
# Not plain TARGET: SAM hands make its whole environment, and a stray TARGET must not change
# what is deployed.
LAMBDA_TARGET ?= aarch64-unknown-linux-musl
LAMBDA_DIR ?= $(or $(CARGO_TARGET_DIR),target)/lambda
LAMBDA_FLAGS ?=

# Each function's template logical id and its binary: the one list of them.
LAMBDAS := WebhookIngestFunction:webhook-ingest OutreachWorkerFunction:outreach-worker \
  ConsentApiFunction:consent-api SmsInboundFunction:sms-inbound \
  VoiceCallbacksFunction:voice-callbacks VoiceAgentFunction:voice-agent \
  RetentionPurgerFunction:retention-purger
binary = $(patsubst $(1):%,%,$(filter $(1):%,$(LAMBDAS)))
# What `make lambdas` builds: the seven, unless told otherwise (scripts/soak: callfy-soak).
LAMBDA_PACKAGES ?= $(foreach l,$(LAMBDAS),$(lastword $(subst :, ,$(l))))
BUILD = $(strip cargo lambda build --release $(LAMBDA_FLAGS) --target $(LAMBDA_TARGET))

.DEFAULT_GOAL := lambdas

build-%:
	$(if $(ARTIFACTS_DIR),,$(error ARTIFACTS_DIR is not set: sam build sets it; run `make lambdas` instead))
	$(if $(call binary,$*),,$(error $* is not a function of the template))
	$(BUILD) --bin $(call binary,$*) --lambda-dir "$(ARTIFACTS_DIR)" --flatten $(call binary,$*)

lambdas:
	$(BUILD) --lambda-dir "$(LAMBDA_DIR)" $(addprefix -p ,$(LAMBDA_PACKAGES))

# LogicalId:binary, one a line (scripts/check-arm64 reads it).
list:
	@printf '%s\n' $(LAMBDAS)

.PHONY: lambdas list
