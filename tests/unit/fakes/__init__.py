"""In-memory fakes of each service's ports: what use-case tests run on instead of databases and servers."""
