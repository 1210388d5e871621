"""The target: finding its process from a container id, entering its namespaces, its root
(every path resolved inside it), its credentials and environment."""
