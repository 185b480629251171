"""The query side: `embedworker serve` on Ray Serve (`service`), its HTTP contract
(`http_contract`), its metrics summed over replicas (`metrics`), search over the vector sets
(`search`) and the search page (`static/`). May import the ground floor only."""
