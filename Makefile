# `sam build` (infra/template.yaml, BuildMethod: makefile) runs `make build-<LogicalId>` here with
# ARTIFACTS_DIR set; each target leaves that function's `bootstrap` there.
#
# Every function is a static aarch64 musl binary, cross-compiled and linked by cargo-lambda (zig):
# no dynamic loader and no shared libraries to map at cold start, which is what brings init to
# the hello-world baseline (docs/performance.md). `make lambdas` builds all seven the same way
# into $CARGO_TARGET_DIR/lambda (default target/lambda).
# Not plain TARGET: SAM hands make its whole environment, and a stray TARGET must not change
# what is deployed.
LAMBDA_TARGET ?= aarch64-unknown-linux-musl
FUNCTIONS := webhook-ingest outreach-worker consent-api sms-inbound voice-callbacks voice-agent retention-purger

.DEFAULT_GOAL := lambdas

define lambda
	$(if $(ARTIFACTS_DIR),,$(error ARTIFACTS_DIR is not set: sam build sets it; run `make lambdas` instead))
	cargo lambda build --release --target $(LAMBDA_TARGET) --bin $(1) --lambda-dir "$(ARTIFACTS_DIR)" --flatten $(1)
endef

build-WebhookIngestFunction:
	$(call lambda,webhook-ingest)
build-OutreachWorkerFunction:
	$(call lambda,outreach-worker)
build-ConsentApiFunction:
	$(call lambda,consent-api)
build-SmsInboundFunction:
	$(call lambda,sms-inbound)
build-VoiceCallbacksFunction:
	$(call lambda,voice-callbacks)
build-VoiceAgentFunction:
	$(call lambda,voice-agent)
build-RetentionPurgerFunction:
	$(call lambda,retention-purger)

lambdas:
	cargo lambda build --release --target $(LAMBDA_TARGET) $(addprefix -p ,$(FUNCTIONS))

.PHONY: lambdas $(foreach f,WebhookIngest OutreachWorker ConsentApi SmsInbound VoiceCallbacks VoiceAgent RetentionPurger,build-$(f)Function)
