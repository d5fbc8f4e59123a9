include $(sort $(wildcard $(BR2_EXTERNAL_TETHER_PATH)/package/*/*.mk))
