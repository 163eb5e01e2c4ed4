"""The Kubernetes operator: TrafficPolicy resources -> control loops, status, and xDS for proxies.

Layout (a reader should know from the path what a file owns):
- seams.py        what the operator needs of the control loop (protocols) and the real loop factory
- status.py       status subresource content from loop reports (pure)
- conflicts.py    which of two policies routing one service wins (pure)
- controller.py   per-policy lifecycle without Kopf: checks, conflicts, loop, status, events
- handlers.py     the Kopf handlers (create/update/resume/delete, daemon, validating webhook)
- follower.py     every replica: serve xDS from the routes in the policies' status
- endpoints.py    EndpointSlices of the local and remote clusters -> the xDS endpoints
- leader.py       coordination.k8s.io/v1 Lease leader election
- istio.py        Istio sidecar node metadata -> xDS view
- destinationrule.py  output=destinationRule: Istio DestinationRule localityLbSetting.distribute
- kube.py         Kubernetes client plumbing (kubeconfig, watches in threads)
- metrics.py      the operator's Prometheus metrics
- app.py, cli.py  `slate operator`
"""
