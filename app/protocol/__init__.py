"""The wire protocol: request fields, response encodings, errors and the OpenAPI document."""
