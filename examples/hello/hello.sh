#!/bin/sh
echo "hello from forge"
