// Package image is the agent's image store: it pulls images from
// registries, loads them from archives, unpacks their layers once into a
// content store, and hands the runtime the layer directories it stacks
// into an overlayfs rootfs.
//
// # Layout on disk
//
//	DIR/index.json           metadata of every image and layer (see below)
//	DIR/layers/<hex>/        one unpacked layer, named by its diff id
//	                         (the sha256 of the uncompressed tar)
//	DIR/tmp/                 work space; emptied by Open
//
// Layers are keyed by diff id, not by the compressed digest, so the same
// layer arriving gzipped from a registry and uncompressed from a docker
// save archive is unpacked once. A layer is unpacked into tmp/, its
// content hash is checked against the diff id, the filesystem is synced
// (syncfs) and the directory is renamed into layers/. The rename is the
// commit: a directory under layers/ is always complete, and a crash leaves
// only a tmp/ directory that the next Open deletes. Removal is the same in
// reverse: rename into tmp/, then delete.
//
// Unpacking is our own safe untar (untar.go): names that climb out of the
// root are refused, parents are opened component by component without
// following symlinks (so a symlink planted by an earlier entry cannot
// redirect a later one), hardlink targets are confined to the layer, and
// whiteouts are written in the overlayfs encoding (0/0 character devices,
// trusted.overlay.opaque=y). Ownership, modes (setuid included), xattrs and
// times are kept. Device nodes other than 0/0 whiteouts are refused (fifos
// are kept, as docker keeps them). What one layer may unpack to is bounded
// (Limits: file bytes and entries, node settings --max-layer-bytes and
// --max-layer-entries, 16 GiB and 1,000,000 by default), and so is the
// uncompressed stream read, so a gzip bomb is refused with ErrLimit, and
// what it unpacked is removed like any failed layer. An image of more than
// 128 layers, or whose config is above 4 MiB (read into memory whole), is
// refused before anything is fetched or unpacked.
//
// # Metadata: a JSON index, not bbolt
//
// The index maps manifest digests to image records (references, config
// digest, the parts of the config a task needs, diff ids, times) and diff
// ids to unpacked sizes. It is a few KB, changes only when an image is
// pulled, loaded, tagged, used or collected, and is always read whole, so
// a JSON file rewritten atomically (temp file, fsync, rename, fsync of the
// directory) is enough. It stays readable with cat and jq when a node
// misbehaves, and it does not hold a second bbolt file lock next to the
// agent's own state database. Layer directories are the source of truth
// for what is on disk; the index only says which images use them.
//
// # Identity and names
//
// An image is identified by its manifest digest (Image.Digest); its ID is
// the config digest, as in docker. For a docker save archive the manifest
// is the one go-containerregistry derives from the archive, so its digest
// differs from the registry's; the ID is the same. References are stored
// fully qualified (go-containerregistry's name.Reference.Name(), e.g.
// "index.docker.io/library/app:1"), and lookups normalise their input the
// same way, so "app:1" finds it. Get also takes a digest or ID, or an
// unambiguous prefix of at least four hex digits.
//
// Pulling or loading a reference that another image holds moves it (a
// re-tag); the old image keeps its other references or becomes dangling.
// Remove only drops references. Disk space comes back through GC, which
// deletes dangling images that the caller says are not in use and then
// every layer no remaining image uses; this way removing an image can
// never pull a rootfs from under a running task.
//
// # Concurrency
//
// A per-layer lock (keyed by diff id, context-aware) serialises unpacking,
// so two pulls or loads sharing a layer unpack it once; the second waits
// and finds it done. A pull or load pins its layers until its image is
// committed, and GC skips pinned layers. Store.mu guards the in-memory
// index and the pins, and is never held while unpacking or downloading.
// Load and Pull commit all their images in one index write; if anything
// fails, the index is untouched and layers they unpacked that nothing else
// uses are deleted again.
//
// # Registries
//
// Pull and Resolve use go-containerregistry's remote package for
// linux/GOARCH. Plain http is used for localhost and loopback registries,
// for registries listed in PullOptions.InsecureRegistries, and for all
// registries with PullOptions.Insecure. Credentials come from a docker
// config.json ("auths", "credHelpers", "credsStore"), which we parse
// ourselves rather than import docker/cli.
//
// # Rootfs
//
// The store does not mount. LowerDirs gives the layer directories top
// first, as overlayfs wants them, and OverlayOptions builds the mount data
// string, refusing one longer than the single page mount(2) accepts.
package image
