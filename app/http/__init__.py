"""The HTTP layer: routes, request parsing (uploads, multipart), admission, security, middleware, answers
and error handlers. It turns requests into jobs for `app.engine` and its results into responses."""
