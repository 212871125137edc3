"""The use cases, one module each: tenant and plain data in, domain types out. Routers and the CLI call
these and nothing below them."""
