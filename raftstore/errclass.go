package raftstore

// Error classes without importing errdefs (raftstore imports nothing of
// Shoal but proto/): each type has the marker method errdefs looks for, so
// the gRPC edge maps the store's errors to codes the one way it maps
// everything else. The sentinels are pointers: errors.Is compares identity.

type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }
func (*notFoundError) NotFound()       {}

type alreadyExistsError struct{ msg string }

func (e *alreadyExistsError) Error() string { return e.msg }
func (*alreadyExistsError) AlreadyExists()  {}

type conflictError struct{ msg string }

func (e *conflictError) Error() string { return e.msg }
func (*conflictError) Conflict()       {}

type unavailableError struct{ msg string }

func (e *unavailableError) Error() string { return e.msg }
func (*unavailableError) Unavailable()    {}

type outOfRangeError struct{ msg string }

func (e *outOfRangeError) Error() string { return e.msg }
func (*outOfRangeError) OutOfRange()     {}

type invalidArgumentError struct{ msg string }

func (e *invalidArgumentError) Error() string  { return e.msg }
func (*invalidArgumentError) InvalidArgument() {}
