package harness

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// RunInput is RunOutput with stdin given (`shoal task exec -i`). The
// exit code of a failure is in the *ExecError.
func (c *Client) RunInput(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	bin, err := binaryPath()
	if err != nil {
		return "", "", err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCLITimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append(append([]string(nil), c.Global...), args...)
	start := time.Now()
	cmd := c.Host.nsCommand(ctx, bin, full...)
	cmd.WaitDelay = time.Second
	cmd.Stdin = strings.NewReader(stdin)
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err = cmd.Run()
	stdout, stderr = outb.String(), errb.String()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		err = &ExecError{Args: append([]string{bin}, full...), ExitCode: code, Stdout: stdout, Stderr: stderr, Err: err}
	}
	c.Host.logCLI(full, start, stdout, stderr, err)
	return stdout, stderr, err
}
