# Herald in a container: a slim runtime image, a non-root user, the journal on a volume.
#   docker build -t herald .
#   docker run -p 8080:8080 -v herald-data:/data -e DIRECTORY_CHANNEL_TOKEN=… herald
# Mount your own config over /etc/herald/routes.yaml. The admin listener (metrics, health,
# dead letters, reload) stays inside the container unless HERALD_ADMIN_LISTEN says otherwise.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herald \
 && install -D -m 0755 target/release/herald /out/herald

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin herald \
 && install -d -o herald -g herald /data
COPY --from=build /out/herald /usr/local/bin/herald
COPY routes.yaml /etc/herald/routes.yaml
ENV HERALD_CONFIG=/etc/herald/routes.yaml \
    HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_ADMIN_LISTEN=127.0.0.1:9090 \
    HERALD_DATA=/data \
    MIMALLOC_ALLOW_THP=0
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["run", "--log-format", "json"]
