"""The app's routes, one module per API: native (`/v1/classify`), openai (the chat subset and
`/v1/models`), ops (`/healthz`, `/metrics`). Each holds an APIRouter of plain functions that
reach the app's shared state through `serving.state.get_state(request)`."""
