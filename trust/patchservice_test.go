package trust

import (
	"slices"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/shoalv1"
)

// TestPatchServiceAuthorizedAsUpdateService: PatchService is an
// UpdateService of the stored spec with a patch applied, so no certificate
// role and no token role may call it that may not call UpdateService.
func TestPatchServiceAuthorizedAsUpdateService(t *testing.T) {
	patch, update := shoalv1.Control_PatchService_FullMethodName, shoalv1.Control_UpdateService_FullMethodName
	pr, pok := DefaultPolicy().Lookup(patch)
	ur, uok := DefaultPolicy().Lookup(update)
	if pok != uok || !slices.Equal(pr, ur) {
		t.Errorf("certificate roles: PatchService %v (%v), UpdateService %v (%v)", pr, pok, ur, uok)
	}
	pt, pok := TokenPolicy()[patch]
	ut, uok := TokenPolicy()[update]
	if !pok || !uok || pt != ut {
		t.Errorf("token roles: PatchService %v (%v), UpdateService %v (%v)", pt, pok, ut, uok)
	}
}
