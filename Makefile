# `sam build` (infra/template.yaml, BuildMethod: makefile) runs `make build-<LogicalId>` here with
# ARTIFACTS_DIR set; each target leaves that function's `bootstrap` there.
#
# Every function is a static aarch64 musl binary, cross-compiled and linked by cargo-lambda (zig):
# no dynamic loader and no shared libraries to map at cold start, which is what brings init to
# the hello-world baseline (docs/performance.md). `make lambdas` builds all seven the same way.
TARGET ?= aarch64-unknown-linux-musl
FUNCTIONS := webhook-ingest outreach-worker consent-api sms-inbound voice-callbacks voice-agent retention-purger

define lambda
	cargo lambda build --release --target $(TARGET) --bin $(1) --lambda-dir "$(ARTIFACTS_DIR)" --flatten $(1)
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

# All seven into target/lambda/<function>/bootstrap (outside SAM).
lambdas:
	cargo lambda build --release --target $(TARGET) $(addprefix -p ,$(FUNCTIONS))

.PHONY: lambdas $(filter build-%,$(MAKECMDGOALS))
