package raftstore

import (
	"reflect"
	"testing"
)

// TestAPIIsStoreMethodSet: every exported method of *Store is declared in
// API (api.go), so that file stays the package's whole contract.
func TestAPIIsStoreMethodSet(t *testing.T) {
	api := reflect.TypeFor[API]()
	store := reflect.TypeFor[*Store]()
	for i := range store.NumMethod() {
		if name := store.Method(i).Name; func() bool { _, ok := api.MethodByName(name); return !ok }() {
			t.Errorf("(*Store).%s is not declared in API (api.go)", name)
		}
	}
}
