"""Scale-out on Ray: sharded DMD on Ray Data (`distill --engine ray`) and the cloud server on
Ray Serve (`serve-cloud --server ray`), on the [ray] cluster."""
