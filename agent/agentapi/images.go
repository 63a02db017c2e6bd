package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/errdefs"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/image"
	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// diskReserve is the free space an upload must leave on the image store's
// file system: running tasks write to the same disk, and unpacking the
// archive needs room too.
const diskReserve = 512 << 20

// diskCheckEvery is how often (in bytes received) an upload checks the
// free space; a statfs per chunk would be wasted work.
const diskCheckEvery = 64 << 20

func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func (s *Server) images() (ImageStore, error) {
	if s.cfg.Images == nil {
		return nil, errdefs.Unavailablef("node %q has no image store", s.cfg.NodeID)
	}
	return s.cfg.Images, nil
}

// LoadImage receives an image archive and loads it into the store.
func (s *Server) LoadImage(stream shoalv1.AgentAPI_LoadImageServer) error {
	store, err := s.images()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	start := time.Now()
	path, size, err := s.receive(stream, filepath.Join(store.Dir(), "tmp"))
	if path != "" {
		defer os.Remove(path)
	}
	if err != nil {
		s.log.Warn("image upload failed", "bytes", size, "err", err)
		return err
	}
	imgs, err := store.Load(ctx, path)
	if err != nil {
		// The temp file's name means nothing to the caller.
		err = &renamedError{err: err, msg: strings.ReplaceAll(err.Error(), fmt.Sprintf("load %q: ", path), "")}
		s.log.Warn("image load failed", "bytes", size, "err", err)
		return err
	}
	resp := &shoalv1.LoadImageResponse{}
	for _, img := range imgs {
		resp.Images = append(resp.Images, summary(img))
	}
	s.log.Info("images loaded from upload", "bytes", size, "images", len(imgs), "took", time.Since(start).Round(time.Millisecond))
	return stream.SendAndClose(resp)
}

// renamedError keeps err's class (errors.Is) under a better message.
type renamedError struct {
	err error
	msg string
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

// receive writes the upload into a new file in dir and returns its path
// (also on failure, for the caller to remove) and size.
func (s *Server) receive(stream shoalv1.AgentAPI_LoadImageServer, dir string) (string, int64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, fmt.Errorf("image upload: %w", err)
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("image upload: %w", err)
	}
	path := f.Name()
	size, err := s.copyChunks(stream, f, dir)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("image upload: %w", cerr)
	}
	return path, size, err
}

func (s *Server) copyChunks(stream shoalv1.AgentAPI_LoadImageServer, f *os.File, dir string) (int64, error) {
	var size, nextCheck int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return size, err // the stream's own status (the caller went away)
		}
		data := chunk.GetData()
		size += int64(len(data))
		if size > s.cfg.MaxImageBytes {
			return size, errdefs.ResourceExhaustedf("the image archive is larger than the limit of %d bytes", s.cfg.MaxImageBytes)
		}
		if size >= nextCheck {
			free, err := s.freeBytes(dir)
			if err != nil {
				return size, fmt.Errorf("image upload: %w", err)
			}
			if free < diskReserve+uint64(len(data)) {
				return size, errdefs.ResourceExhaustedf("not enough disk space on node %q for the image archive (%d MiB free after %d MiB received)", s.cfg.NodeID, free>>20, size>>20)
			}
			nextCheck = size + diskCheckEvery
		}
		if _, err := f.Write(data); err != nil {
			return size, fmt.Errorf("image upload: %w", err)
		}
	}
	if size == 0 {
		return 0, errdefs.InvalidArgumentf("empty upload: no image archive was sent")
	}
	return size, nil
}

// ListImages lists the store's images, most recently used first.
func (s *Server) ListImages(_ context.Context, _ *shoalv1.ListImagesRequest) (*shoalv1.ListImagesResponse, error) {
	store, err := s.images()
	if err != nil {
		return nil, err
	}
	resp := &shoalv1.ListImagesResponse{}
	for _, img := range store.List() {
		resp.Images = append(resp.Images, summary(img))
	}
	return resp, nil
}

// RemoveImage drops a reference (by name) or all of an image's references
// (by digest or id); an image left without references is then collected at
// once (Config.CollectImages) unless a task uses it — then it goes with
// the first collection after that task is removed.
func (s *Server) RemoveImage(ctx context.Context, req *shoalv1.RemoveImageRequest) (*shoalv1.RemoveImageResponse, error) {
	store, err := s.images()
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.GetRef()) == "" {
		return nil, errdefs.InvalidArgumentf("ref: required")
	}
	if err := store.Remove(req.GetRef()); err != nil {
		return nil, err
	}
	s.log.Info("image reference removed by request", "ref", req.GetRef())
	if s.cfg.CollectImages != nil {
		// The reference is gone whatever happens here: a failed collection
		// is retried by the periodic one, not reported as a failed rm.
		if err := s.cfg.CollectImages(ctx); err != nil {
			s.log.Warn("image garbage collection after rm", "err", err)
		}
	}
	return &shoalv1.RemoveImageResponse{}, nil
}

func summary(img image.Image) *shoalv1.ImageSummary {
	out := &shoalv1.ImageSummary{Digest: img.Digest, Refs: img.References, Size: img.Size}
	if !img.Created.IsZero() {
		out.Created = timestamppb.New(img.Created)
	}
	if !img.LastUsed.IsZero() {
		out.LastUsed = timestamppb.New(img.LastUsed)
	}
	return out
}
