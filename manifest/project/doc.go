// Package project reads and writes a project's dependency files: Cell.toml,
// the cells it depends on by git URL and tag (Deps, LoadDeps, AddDep), and
// Cell.lock, the commits and endpoints they resolved to (Lock, LoadLock,
// WriteLock). It does no networking and no git: resolving a dependency is
// the caller's job, with package manifest/gitobj.
package project
