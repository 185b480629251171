"""The streaming driver: the supervisor of the replica actors (`supervisor`), elastic replicas
(`scaling`: measure, act) and the decision (`autoscaler`), what replicas report
(`replica_status`). May import `maintenance` and the ground floor."""
