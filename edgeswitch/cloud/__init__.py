"""How the edge reaches a cloud model: in-process or over HTTP (native or OpenAI chat), with
deadlines, retries and a circuit breaker; the wire format and token both sides share."""
