# The fedns container image. Built by scripts/build-image, which vendors every crate from the
# host (cargo vendor) into the build context, so cargo builds --offline and fetches nothing; the
# only download during the build is protoc from the Debian mirror, when the builder image lacks
# it. A plain `docker build .` works too (cargo then fetches from crates.io).
#
#   scripts/build-image                     # -> fedns:VERSION, then `fedns check` inside it
#   docker run --rm --read-only fedns:VERSION check --config /usr/share/fedns/example/config/fedns.yaml
#
# Runtime: distroless `cc` (glibc, libgcc, CA certificates, no shell, no package manager; fedns
# links nothing else), user 65532 (nonroot), the binary stripped. It writes only its state_dir
# (the SOA serial), so it runs with a read-only root filesystem and a volume there
# (deploy/kubernetes mounts an emptyDir at /var/lib/fedns).

ARG BUILDER_IMAGE=rust:1.88-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
# protoc for etcd-client's build script: from the Debian mirror unless the builder image has it.
RUN command -v protoc >/dev/null || { apt-get update \
      && apt-get install -y --no-install-recommends protobuf-compiler \
      && rm -rf /var/lib/apt/lists/*; }
WORKDIR /src
COPY . .
# Recorded in fedns_build_info{commit}; there is no .git in the build context.
ARG FEDNS_COMMIT=unknown
ENV FEDNS_COMMIT=${FEDNS_COMMIT}
RUN if [ -d vendor ]; then \
      mkdir -p .cargo && printf '%s\n' '[source.crates-io]' 'replace-with = "vendored-sources"' \
        '[source.vendored-sources]' 'directory = "vendor"' > .cargo/config.toml; \
      offline=--offline; \
    fi \
    && cargo build --release --locked $offline --bin fedns \
    && strip --strip-all target/release/fedns \
    && install -D -m 0755 target/release/fedns /out/usr/local/bin/fedns \
    && mkdir -p /out/usr/share/fedns/example /out/var/lib/fedns \
    && cp -r config zones /out/usr/share/fedns/example/ \
    && rm -rf /out/usr/share/fedns/example/config/state

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/usr/local/bin/fedns /usr/local/bin/fedns
COPY --from=build /out/usr/share/fedns /usr/share/fedns
COPY --from=build --chown=65532:65532 /out/var/lib/fedns /var/lib/fedns
USER 65532:65532
# DNS (the Service maps port 53 to it; unprivileged, so no capability is needed) and the
# operations port (/healthz, /readyz, /metrics, /status, /explain).
EXPOSE 5353/udp 5353/tcp 8053/tcp
VOLUME ["/var/lib/fedns"]
ENTRYPOINT ["/usr/local/bin/fedns"]
CMD ["serve", "--config", "/etc/fedns/fedns.yaml"]
