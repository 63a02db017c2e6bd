package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrUnauthorized is wrapped when a registry refuses our credentials (or
// wants some and we have none).
var ErrUnauthorized = errors.New("unauthorized")

// PullOptions tune Pull and Resolve.
type PullOptions struct {
	// AuthConfigPath is a docker-style config.json with registry
	// credentials. Empty means $DOCKER_CONFIG/config.json, else
	// ~/.docker/config.json; a missing file means anonymous access.
	AuthConfigPath string
	// InsecureRegistries may be reached over plain http ("host:port").
	// localhost and loopback addresses always may.
	InsecureRegistries []string
	// Insecure allows plain http to every registry.
	Insecure bool
	// Transport overrides the HTTP transport (tests, proxies).
	Transport http.RoundTripper
}

// Pull fetches ref (name[:tag] or name@digest) for linux/GOARCH, unpacks
// its layers into the content store (each layer once) and records it.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	r, ropts, err := remoteOptions(ctx, ref, opts)
	if err != nil {
		return Image{}, err
	}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return Image{}, registryError("pull", ref, err)
	}
	// For an index, remote.WithPlatform makes Image pick linux/GOARCH.
	img, err := desc.Image()
	if err != nil {
		if strings.Contains(err.Error(), "no child with platform") {
			return Image{}, fmt.Errorf("pull %q: %w: no linux/%s image in index", ref, ErrNotFound, runtime.GOARCH)
		}
		return Image{}, registryError("pull", ref, err)
	}

	refs := []string{r.Name()}
	o := s.newOp()
	failed := true
	defer func() { o.done(failed) }()
	p, err := o.prepare(ctx, img, refs)
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", ref, registryErr(err))
	}
	imgs, err := s.commit([]*pending{p})
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", ref, err)
	}
	failed = false
	s.logger.Info("image pulled", "ref", r.Name(), "digest", imgs[0].Digest, "layers", len(imgs[0].Layers))
	return imgs[0], nil
}

// Resolve asks the registry for the manifest digest ref names now (a HEAD
// request; for a multi-platform image the digest of the index), so a
// manager can pin a service to it.
func (s *Store) Resolve(ctx context.Context, ref string, opts PullOptions) (string, error) {
	return Resolve(ctx, ref, opts)
}

// Resolve is Store.Resolve without a store: the CLI pins a service's image
// with it before the service is created.
func Resolve(ctx context.Context, ref string, opts PullOptions) (string, error) {
	r, ropts, err := remoteOptions(ctx, ref, opts)
	if err != nil {
		return "", err
	}
	if d, ok := r.(name.Digest); ok {
		return d.DigestStr(), nil
	}
	desc, err := remote.Head(r, ropts...)
	if err != nil {
		return "", registryError("resolve", ref, err)
	}
	return desc.Digest.String(), nil
}

func remoteOptions(ctx context.Context, ref string, opts PullOptions) (name.Reference, []remote.Option, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reference %q: %v", ErrInvalidArgument, ref, err)
	}
	if opts.Insecure || slices.Contains(opts.InsecureRegistries, r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: reference %q: %v", ErrInvalidArgument, ref, err)
		}
	}
	// name already selects http for localhost and loopback addresses.
	kc, err := newConfigKeychain(opts.AuthConfigPath)
	if err != nil {
		return nil, nil, err
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		remote.WithUserAgent("shoal"),
	}
	if opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(opts.Transport))
	}
	return r, ropts, nil
}

// registryError turns go-containerregistry's errors into our classes with
// a message an operator can act on.
func registryError(what, ref string, err error) error {
	return fmt.Errorf("%s %q: %w", what, ref, registryErr(err))
}

func registryErr(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: no such image or tag at the registry (%v)", ErrNotFound, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: registry refused access; check the credentials in the docker config.json (%v)", ErrUnauthorized, err)
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%w: no such image or tag at the registry (%v)", ErrNotFound, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("%w: registry refused access; check the credentials in the docker config.json (%v)", ErrUnauthorized, err)
			}
		}
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("registry unreachable: %w", err)
	}
	return err
}

// configKeychain resolves credentials from a docker config.json: "auths"
// entries (auth = base64(user:pass), or username/password, identitytoken),
// and credential helpers named by "credHelpers"/"credsStore"
// (docker-credential-NAME on PATH). We parse the file ourselves rather
// than import docker/cli (see DESIGN.md, conventions).
type configKeychain struct {
	path string
	cfg  dockerConfig
}

type dockerConfig struct {
	Auths       map[string]dockerAuth `json:"auths"`
	CredHelpers map[string]string     `json:"credHelpers"`
	CredsStore  string                `json:"credsStore"`
}

type dockerAuth struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

func defaultAuthConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

func newConfigKeychain(p string) (*configKeychain, error) {
	if p == "" {
		p = defaultAuthConfigPath()
	}
	kc := &configKeychain{path: p}
	if p == "" {
		return kc, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return kc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registry auth config: %w", err)
	}
	if err := json.Unmarshal(b, &kc.cfg); err != nil {
		return nil, fmt.Errorf("parse registry auth config %q: %w", p, err)
	}
	return kc, nil
}

// Docker Hub's credentials live under this legacy key.
const dockerHubAuthKey = "https://index.docker.io/v1/"

func (kc *configKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	host := res.RegistryStr()
	keys := []string{host}
	if host == name.DefaultRegistry || host == "docker.io" {
		keys = []string{dockerHubAuthKey, "index.docker.io", "docker.io", "registry-1.docker.io"}
	}
	// Credential helpers first, as docker does.
	for _, k := range keys {
		if h := kc.cfg.CredHelpers[k]; h != "" {
			return kc.fromHelper(h, k)
		}
	}
	for cfgKey, a := range kc.cfg.Auths {
		if !slices.Contains(keys, normalizeAuthKey(cfgKey)) && !slices.Contains(keys, cfgKey) {
			continue
		}
		ac := authn.AuthConfig{
			Username:      a.Username,
			Password:      a.Password,
			IdentityToken: a.IdentityToken,
			RegistryToken: a.RegistryToken,
		}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry auth config %q: auths[%q].auth is not base64: %w", kc.path, cfgKey, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("registry auth config %q: auths[%q].auth is not user:password", kc.path, cfgKey)
			}
			ac.Username, ac.Password = user, pass
		}
		return authn.FromConfig(ac), nil
	}
	if kc.cfg.CredsStore != "" {
		return kc.fromHelper(kc.cfg.CredsStore, keys[0])
	}
	return authn.Anonymous, nil
}

// normalizeAuthKey turns "https://host/v2/" style keys into "host".
func normalizeAuthKey(k string) string {
	k = strings.TrimPrefix(k, "https://")
	k = strings.TrimPrefix(k, "http://")
	host, _, _ := strings.Cut(k, "/")
	return host
}

// fromHelper runs docker-credential-NAME get, the credential helper
// protocol: the server URL on stdin, {"Username","Secret"} on stdout.
func (kc *configKeychain) fromHelper(helper, server string) (authn.Authenticator, error) {
	cmd := exec.Command("docker-credential-"+helper, "get")
	cmd.Stdin = strings.NewReader(server)
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(string(out), "credentials not found") {
			return authn.Anonymous, nil
		}
		return nil, fmt.Errorf("credential helper %q for %q: %w", helper, server, err)
	}
	var cred struct{ Username, Secret string }
	if err := json.Unmarshal(out, &cred); err != nil {
		return nil, fmt.Errorf("credential helper %q: bad output: %w", helper, err)
	}
	if cred.Username == "<token>" {
		return authn.FromConfig(authn.AuthConfig{IdentityToken: cred.Secret}), nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: cred.Username, Password: cred.Secret}), nil
}
