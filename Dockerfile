# ofc-signer container image: a static (musl) binary on a minimal non-root base, no shell.
#   docker build -t ofc-signer .
#   docker run --rm -p 127.0.0.1:3080:3080 ofc-signer --demo --bind 0.0.0.0
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin ofc-signer && mkdir -p /state

# distroless "static": CA certificates, /etc/passwd with the nonroot user, nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/ofc-signer /usr/local/bin/ofc-signer
# The audit log and the idempotency store: keep this on a volume so they survive restarts.
COPY --from=build --chown=nonroot:nonroot /state /var/lib/ofc-signer
ENV OFC_SIGNER_STATE_DIR=/var/lib/ofc-signer
VOLUME ["/var/lib/ofc-signer"]
USER nonroot:nonroot
EXPOSE 3080
# The probe is the binary itself (`ofc-signer healthcheck` asks /ofc-signer/ready on BITGO_PORT,
# default 3080): the image has no shell and no curl.
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/ofc-signer", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ofc-signer"]
CMD ["--bind", "0.0.0.0"]
