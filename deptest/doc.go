// Package deptest holds Shoal's dependency rules as a test: which of
// Shoal's packages may import which, written once as a table at the top of
// deptest_test.go, and checked against the imports `go list` reports for
// every package of the module. It has no code of its own; run it with
// `go test ./deptest`.
//
// The rules keep the big shape from tangling: managers and agents never
// import each other (what both need lives in a shared leaf package:
// trust/ for certificates, TLS and authorization, logstream/ for log
// streaming), the pure layers (scheduler/, raftstore/) import nothing of
// Shoal but proto/, the client does not reach into the daemon, and only
// cmd/ and daemon/ wire the manager and agent roles together.
//
// What is checked:
//
//   - Production imports only (a package's Imports under the current GOOS
//     and build tags, seccomp included): tests may assemble both sides to
//     exercise a seam (the log broker's tests serve real agent APIs; the
//     trust tests serve through manager/transport's mux), and a test's
//     imports end up in no binary.
//   - Transitively for "never" rules: "manager/... never imports
//     agent/..." also fails when the import goes through other packages,
//     and the failure prints the whole path (manager/x → foo →
//     agent/y). A path is reported where it leaves the rule's scope, so a
//     bad edge is not reported again for every package that imports it.
//     "Only" rules (the leaves) check direct imports: what an allowed
//     package imports is its own rules' business.
//   - The main module only: bench/ is a module of its own, a program that
//     may import anything, like cmd/.
//
// The test runs `go list`, whose reads go test cannot see; so that a cached
// pass is not reused after an edit, the test also stats the module's Go
// files and lists its directories itself.
//
// A rule whose packages do not exist fails the test (a rename must not
// silently retire a rule) unless the table says the packages are yet to
// come (overlay/).
package deptest
