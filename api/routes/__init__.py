"""One ``APIRouter`` per resource: route, score, experts, feedback, chat (OpenAI-compatible), health/metrics."""
