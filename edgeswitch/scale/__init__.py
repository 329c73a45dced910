"""Scale-out on Ray: sharded DMD on Ray Data (`distill --engine ray`), the cloud server on
Ray Serve (`serve-cloud --server ray`), and the loopback-only network namespace of the Ray
tests."""
