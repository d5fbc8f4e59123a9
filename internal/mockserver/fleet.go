package mockserver

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// ConnectLimit makes the device endpoint answer connect bursts as the real
// server's pending change does (PROTOCOL.md 2.9.1): above Rate accepted
// connects a second, 503 {"error": "server is starting up"}.
type ConnectLimit struct {
	// Rate is how many device connects a second are accepted (a token
	// bucket refilled at Rate); 0 accepts every connect.
	Rate float64
	// Burst is the bucket's size, full at start; 0 means Rate (at least 1).
	Burst int
	// RetryAfter, when set, goes out with each 503 as Retry-After in whole
	// seconds (rounded up); upstream's change sends none.
	RetryAfter time.Duration
}

// StartingUpText is the error text of a connect refused by ConnectLimit,
// the real server's.
const StartingUpText = "server is starting up"

// ConnectEvent is one request to the device endpoint and the server's
// answer, for a bench that counts connects over time.
type ConnectEvent struct {
	// At is when the request arrived.
	At time.Time
	// Device is the id the token names; "" when it names none.
	Device string
	// Status is the answer: 101 for an accepted websocket, else the HTTP
	// status of the refusal (401, 503, ...).
	Status int
}

// connectBucket is ConnectLimit's token bucket.
type connectBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newConnectBucket(l ConnectLimit) *connectBucket {
	if l.Rate <= 0 {
		return nil
	}
	burst := float64(l.Burst)
	if burst <= 0 {
		burst = math.Max(1, l.Rate)
	}
	return &connectBucket{rate: l.Rate, burst: burst, tokens: burst}
}

// take reports whether a connect at now is within the rate.
func (b *connectBucket) take(now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refuseStartingUp answers a connect above ConnectLimit.
func (s *Server) refuseStartingUp(w http.ResponseWriter) {
	if ra := s.opts.ConnectLimit.RetryAfter; ra > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(ra.Seconds())), 10))
	}
	writeError(w, http.StatusServiceUnavailable, StartingUpText)
}

// connectEvent tells Options.OnConnect about a request to the device
// endpoint.
func (s *Server) connectEvent(at time.Time, device string, status int) {
	if s.opts.OnConnect != nil {
		s.opts.OnConnect(ConnectEvent{At: at, Device: device, Status: status})
	}
}

// CloseDevices drops every device websocket at once with 1011, as
// deviceconnect does when it sheds its sockets, and stays up; it returns
// how many it closed once all are cleaned up.
func (s *Server) CloseDevices() int {
	s.mu.Lock()
	conns := make([]*Device, 0, len(s.conns))
	for _, d := range s.conns {
		conns = append(conns, d)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.Close()
		}()
	}
	wg.Wait()
	return len(conns)
}
