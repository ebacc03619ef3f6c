# Builds the `zt` binary (connector, edge, client and admin commands in one).
#   docker build -t zt:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin zt

# distroless/cc carries glibc and CA certificates and nothing else; the nonroot variant
# runs as uid 65532, which the Kubernetes manifests in deploy/kubernetes expect.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/zt /usr/local/bin/zt
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/zt"]
CMD ["--help"]
