# The multi-stage example drawn in docs/plan-multistage.svg (README, "forge plan").
ARG RUST_VERSION=1.82

FROM rust:${RUST_VERSION}-alpine AS deps
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry cargo fetch

FROM deps AS build
COPY src/ src/
RUN --mount=type=cache,target=/usr/local/cargo/registry cargo build --release

FROM deps AS test
COPY . .
RUN cargo test

FROM alpine:3.20 AS assets
RUN apk add --no-cache ca-certificates

FROM scratch AS final
COPY --from=assets /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
RUN --mount=type=bind,from=build,source=/src/target/release,target=/release ["/release/app", "--check"]
COPY --from=build /src/target/release/app /app
USER 65534
EXPOSE 8080
ENTRYPOINT ["/app"]
