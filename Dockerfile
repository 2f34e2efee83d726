# One image for every reclab service but PostgreSQL: Prefect server and worker, MLflow, Streamlit,
# Dask, Redis; each container runs its entry script in deploy/bin (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
# The online feature store's server, Debian's package (deploy/bin/redis).
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1
COPY pyproject.toml constraints.txt README.md ./
COPY common common
COPY sim sim
COPY components components
COPY story story
COPY flows flows
COPY dashboards dashboards
COPY configs configs
COPY deploy deploy
# CPU build of torch from PyTorch's CPU index, then the pinned stack.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt -e ".[team,online]"
CMD ["reclab", "--help"]
