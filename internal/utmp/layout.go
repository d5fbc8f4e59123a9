package utmp

import "encoding/binary"

// layout is where glibc's struct utmp keeps its fields on one
// architecture. The first 336 bytes are the same everywhere (ut_type,
// padding, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256],
// ut_exit); what follows depends on glibc's __WORDSIZE_TIME64_COMPAT32
// (bits/wordsize.h). Where it is 1 (x86-64, and every 32-bit
// architecture, whose long is 32 bits anyway) ut_session and ut_tv are
// 32-bit fields and a record is 384 bytes; where it is 0 on a 64-bit
// architecture (aarch64) they are a long and a struct timeval, and a
// record is 400 bytes. Both were checked against Debian 12's own who,
// last and utmpdump (arm64, armhf under qemu-user; amd64 in the tests).
// On armhf, coreutils' who is built with 64-bit time_t and misreads the
// time of every record, whoever wrote it; last and utmpdump read it.
type layout struct {
	size    int
	wide    bool // ut_session, tv_sec and tv_usec are 64-bit
	session int
	tvSec   int
	tvUsec  int
	addr    int
}

var (
	// layout384 is x86-64, i386, armhf/armel, mips/mipsel, riscv64.
	layout384 = layout{size: 384, session: 336, tvSec: 340, tvUsec: 344, addr: 348}
	// layout400 is aarch64: ut_session is a long at 336, ut_tv a struct
	// timeval of two 64-bit fields at 344, ut_addr_v6 at 360, 20 reserved
	// bytes, padded to 8.
	layout400 = layout{size: 400, wide: true, session: 336, tvSec: 344, tvUsec: 352, addr: 360}
)

// Offsets common to every layout.
const (
	offType = 0
	offPID  = 4
	offLine = 8
	offID   = 40
	offUser = 44
	offHost = 76
	offExit = 332

	lineSize = 32
	idSize   = 4
	userSize = 32
	hostSize = 256
)

// Record types (utmp.h's ut_type).
const (
	Empty       = 0
	BootTime    = 2
	InitProcess = 5
	LoginProc   = 6
	UserProcess = 7
	DeadProcess = 8
)

// byteOrder is the machine's: utmp files are read by the device's own
// C library.
var byteOrder = binary.NativeEndian
