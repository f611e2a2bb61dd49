"""The one place that wraps kubernetes_asyncio: clients, informers, work queues, leases."""
