# syntax=docker/dockerfile:1
# Multi-stage: build a wheel, install it into a clean slim image, run as a non-root user.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY routing ./routing
COPY loadtests ./loadtests
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home sluice
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /etc/sluice
USER 10001
EXPOSE 8080 9901
ENTRYPOINT ["sluice"]
CMD ["serve", "--config", "/etc/sluice/examples/quickstart.yaml", "--admin", "0.0.0.0:9901"]
