require tether.inc

PV = "0.1.0+git"

# The tether commit to build. The placeholder below stops do_fetch with a
# clear message; set TETHER_SRCREV in local.conf or a bbappend (see
# yocto/README.md).
TETHER_SRCREV ??= "0000000000000000000000000000000000000000"
SRCREV = "${TETHER_SRCREV}"

python tether_check_srcrev() {
    if d.getVar('SRCREV') == '0' * 40:
        bb.fatal('Set TETHER_SRCREV to the tether commit to build (yocto/README.md, "Choosing the source")')
}
do_fetch[prefuncs] += "tether_check_srcrev"
