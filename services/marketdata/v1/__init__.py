"""Generated from proto/marketdata/v1 by `marketdata codegen`; do not edit."""
