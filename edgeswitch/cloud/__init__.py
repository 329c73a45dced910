"""How the edge reaches a cloud model: in-process or over HTTP (native, or OpenAI chat with a
pluggable payload for sensor or video clips), with deadlines, retries and a circuit breaker;
the fallback reasons, the reply parsing, and the wire format and token both sides share."""
