package e2e

import (
	"os"
	"testing"

	"github.com/shoal-dev/shoal/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
