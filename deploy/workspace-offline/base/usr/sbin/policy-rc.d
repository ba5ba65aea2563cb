#!/bin/sh
# No service is started while packages are installed into an image.
exit 101
