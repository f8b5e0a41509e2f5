"""HTTP edge: REST translated to gRPC from the generated OpenAPI document, SSE live updates, docs, dashboard."""
