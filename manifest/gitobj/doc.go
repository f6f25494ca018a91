// Package gitobj moves the git objects of cells' manifests between nodes
// and machines: a libp2p object server (Server, on ObjectProtocol) that
// serves only what announced commits reach, a fetcher (Fetcher) that gets a
// commit's Cell.json or a whole clone from the providers the DHT names and
// checks every object against its hash, a cache of git remotes (Remotes)
// for dependencies named by URL and tag, and the reading of local
// repositories (CommitCID, Dirty, AtCommit).
//
// The manifest format and commit CIDs are package manifest; Cell.toml and
// Cell.lock are package manifest/project.
package gitobj
