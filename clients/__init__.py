"""augserve.clients: typed gRPC clients for augserve. Imports neither torch nor Ray."""
