# ofc-signer container image: build with the Rust toolchain, run from a minimal non-root image.
#   docker build -t ofc-signer .
#   docker run --rm -p 3080:3080 ofc-signer --demo --bind 0.0.0.0
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin ofc-signer && mkdir -p /state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ofc-signer /usr/local/bin/ofc-signer
# The audit log and the idempotency store: keep this on a volume so they survive restarts.
COPY --from=build --chown=nonroot:nonroot /state /var/lib/ofc-signer
ENV OFC_SIGNER_STATE_DIR=/var/lib/ofc-signer
VOLUME ["/var/lib/ofc-signer"]
USER nonroot:nonroot
EXPOSE 3080
ENTRYPOINT ["/usr/local/bin/ofc-signer"]
CMD ["--bind", "0.0.0.0"]
