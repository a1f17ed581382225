"""Serving: `edgeport serve` (FastAPI + uvicorn), Ray Serve scale-out, Triton model repositories.

Torch-free: the runtime's pipelines underneath, FastAPI/uvicorn/prometheus-client on top
(`pip install 'edgeport[serve]'`). Modules:
    config        ServeConfig (limits, batching knobs), NAME=FOLDER specs
    models        ServedModel: an export folder run a batch of requests at a time
    batching      MicroBatcher: dynamic micro-batching with a bounded queue
    app           create_app(): the FastAPI app (errors, limits, health, metrics)
    task_routes   per-task JSON routes; openai_routes: /v1; kserve: /v2
    ray_serve     the Ray Serve deployment (@serve.batch, replicas, autoscaling)
    triton_repo   `edgeport triton-repo`: config.pbtxt, tokenizer (Python backend) and ensemble models
    cli           `edgeport serve` and `edgeport triton-repo`
"""

from edgeport.serve.config import ServeConfig, parse_model_specs

__all__ = ["ServeConfig", "parse_model_specs"]
