"""The PostgreSQL turn queue (procrastinate): ingress enqueues turns, workers answer them."""
